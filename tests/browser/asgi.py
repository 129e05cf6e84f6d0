"""The portal's ASGI application plus static files from the finders (no collectstatic), for the test servers."""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from portal.asgi import application as portal_application

# HTTP under /static/ is answered here; everything else (pages, API, WebSockets) goes to the portal unchanged.
application = ASGIStaticFilesHandler(portal_application)
