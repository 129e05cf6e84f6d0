"""Bad input in every field of both request forms: the error sits beside the field and the input is kept; keyboard use."""

import pytest
from playwright.sync_api import expect

from tests.browser.fixtures import sign_in
from tests.e2e.pagecheck import check_fits, focused, tab_to, unlabelled_fields
from workspaces.models import WorkspaceRequest

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

RETIRED = "Standard_NC6s_v3"  # the quick start's instance type; KAITO v0.12 no longer accepts V100s


@pytest.fixture
def form(stack, people, new_page):
    """open(kind, query="") -> a signed-in page on the request form."""
    page = new_page()
    sign_in(page, stack, people.requester)

    def open_form(kind, query=""):
        page.goto(f"{stack.url}/workspaces/new/{kind}/{query}")
        expect(page.locator("#preview")).to_be_attached()
        return page

    return open_form


def set_model(page, name):
    """Type a model and leave the field: the instance types are reloaded for it (htmx)."""
    page.fill("#id_preset", name)
    with page.expect_response(lambda r: "/instance-type-options/" in r.url):
        page.locator("#id_preset").blur()


def choose_retired_instance_type(page):
    """The select offers only what KAITO accepts; an old bookmark or a copied quick start still sends the V100."""
    page.evaluate(
        """(name) => {
        const select = document.getElementById('id_instance_type');
        select.add(new Option(name, name));
        select.value = name;
    }""",
        RETIRED,
    )


def submit(page):
    with page.expect_navigation():
        page.click("#submit-request")


def fill(page, **values):
    """Type into each field (by name)."""
    for name, value in values.items():
        page.fill(f"#id_{name}", value)


def keeps(page, **values):
    """Each field (by name) still holds what the user typed."""
    for name, value in values.items():
        expect(page.locator(f"#id_{name}")).to_have_value(value)


def error_beside(page, field, text):
    """The message is inside the field's own container (#field-<name>), announced as an alert."""
    errors = page.locator(f"#field-{field} .errorlist[role=alert]")
    expect(errors).to_contain_text(text)
    expect(page.locator(f"#field-{field}")).to_have_class("field has-error")


def test_inference_form_puts_each_error_beside_its_field(stack, people, form, shots):
    page = form("inference")
    set_model(page, "no-such-model")
    choose_retired_instance_type(page)
    typed = {
        "name": "Bad_Name!",
        "adapters": "only-a-name\nsupport-adapter Not An Image!!",
        "inference_config": "max-model-len: [",
        "hours": "100000",
        "purpose": "Bad input, every field",
    }
    fill(page, **typed, hf_token="hf_typed_secret_value")
    submit(page)

    error_beside(page, "name", "The workspace name must be a DNS-1123 label")
    error_beside(page, "preset", "No preset named 'no-such-model' in the catalog.")
    error_beside(page, "instance_type", f"{RETIRED} is no longer accepted by KAITO: V100 (CUDA compute capability 7.0)")
    error_beside(page, "adapters", "Line 1: write the adapter's name, then its image.")
    error_beside(page, "inference_config", "The inference configuration is not valid YAML (line 1)")
    error_beside(page, "hours", "Expiry must be between 1 and 720 hours.")
    # What the user typed is still there, the retired instance type included (marked as not offered).
    keeps(page, preset="no-such-model", instance_type=RETIRED, **typed)
    expect(page.locator("#id_instance_type option:checked")).to_have_text(f"{RETIRED} — not offered")
    # The one deliberate exception: a token is never sent back to the browser.
    expect(page.locator("#id_hf_token")).to_have_value("")
    expect(page.locator("#hf-token-reenter")).to_have_text(
        "For your safety the token is not shown again; enter it again before sending."
    )
    assert "hf_typed_secret_value" not in page.content()
    # The live preview agrees with the fields: what was typed is wrong, not missing.
    preview = page.locator("#preview-errors")
    expect(preview).to_contain_text("The workspace name must be a DNS-1123 label")
    expect(preview).to_contain_text(f"{RETIRED} is no longer accepted by KAITO")
    expect(preview).not_to_contain_text("is required")
    assert unlabelled_fields(page) == []
    check_fits(page, shots, "inference-form-errors")

    # The adapter's image, a gated model without a token, node labels that are not labels.
    set_model(page, "google/gemma-3-4b-it")
    page.select_option("#id_instance_type", "")  # bring your own nodes
    typed = {
        "name": "phi-gated",
        "node_selector": "not a label",
        "adapters": "support-adapter Not An Image!!",
        "inference_config": "",
        "hours": "8",
    }
    fill(page, **typed)
    submit(page)
    error_beside(page, "node_selector", "'not a label' is not a label 'key=value'.")
    error_beside(page, "hf_token", "google/gemma-3-4b-it is a gated model: a Hugging Face token with access to it")
    error_beside(page, "adapters", "Unable to parse the support-adapter adapter image reference")
    keeps(page, preset="google/gemma-3-4b-it", instance_type="", **typed)
    for field in ("name", "preset", "instance_type", "inference_config", "hours"):
        expect(page.locator(f"#field-{field} .errorlist")).to_have_count(0)
    shots(page, "inference-form-gated-model")
    assert not WorkspaceRequest.objects.exists()


def test_tuning_form_puts_each_error_beside_its_field(stack, people, form, shots):
    page = form("tuning", "?preset=phi-3-mini-128k-instruct")
    typed = {
        "name": "tune-bad-input",
        "input_urls": "http://10.0.0.5/dolly.parquet",
        "output_image": "UPPER/Case:tag",
        "output_push_secret": "my-push-secret",
        "registry_username": "acr-user",
        "training_config": "training_config:\n  nope: 1\n",
        "hours": "200",
    }
    fill(page, **typed, registry_password="typed-registry-password")
    submit(page)

    error_beside(page, "input_urls", "URL 1: The host 10.0.0.5 is a private network address")
    error_beside(page, "output_image", "Unable to parse the output image reference")
    error_beside(page, "output_push_secret", "Give either an existing push secret or registry credentials, not both.")
    error_beside(page, "training_config", "Unrecognized section: nope")
    error_beside(page, "hours", "Maximum run time must be between 1 and 168 hours.")
    keeps(page, **typed)
    expect(page.locator("#id_registry_password")).to_have_value("")  # never echoed
    expect(page.locator("#password-reenter")).to_be_visible()
    assert "typed-registry-password" not in page.content()
    assert unlabelled_fields(page) == []
    check_fits(page, shots, "tuning-form-errors")

    # A model KAITO cannot tune, a dataset image and a push secret that are not names, a config that is not YAML.
    typed = {
        "name": "Tune_Bad!",
        "input_urls": "",
        "input_image": "Not An Image!!",
        "output_image": "myacr.azurecr.io/adapter:0.0.1",
        "output_push_secret": "Bad_Secret!",
        "registry_username": "",
        "training_config": "[",
        "hours": "4",
    }
    set_model(page, "meta-llama/Llama-3.1-8B-Instruct")
    fill(page, **typed)
    submit(page)
    error_beside(page, "name", "The workspace name must be a DNS-1123 label")
    error_beside(page, "preset", "meta-llama/Llama-3.1-8B-Instruct")
    error_beside(page, "input_image", "Unable to parse the input image reference")
    error_beside(page, "output_push_secret", "The Secret name 'Bad_Secret!' must be a DNS-1123 subdomain")
    error_beside(page, "training_config", "The tuning configuration is not valid YAML (line 1)")
    keeps(page, preset="meta-llama/Llama-3.1-8B-Instruct", **typed)
    for field in ("input_urls", "output_image", "hours"):
        expect(page.locator(f"#field-{field} .errorlist")).to_have_count(0)
    shots(page, "tuning-form-more-errors")
    assert not WorkspaceRequest.objects.exists()


def test_inference_request_with_the_keyboard_alone(stack, people, form, shots):
    page = form("inference")
    page.keyboard.press("Tab")  # the first stop is the skip link, which comes on screen when focused
    assert focused(page)["shown"] and page.evaluate("() => document.activeElement.className") == "skip-link"
    box = page.locator(".skip-link").bounding_box()
    assert box["x"] >= 0 and box["y"] >= 0, box
    tab_to(page, "id_team")  # the navigation, then the form; every stop shows its focus
    tab_to(page, "id_name", limit=1)
    page.keyboard.type("keyboard-phi")
    tab_to(page, "id_preset", limit=1)
    page.keyboard.type("phi-3-mini-128k-instruct")
    with page.expect_response(lambda r: "/instance-type-options/" in r.url):
        tab_to(page, "id_instance_type", limit=1)  # leaving the model reloads the instance types
    expect(page.locator("#id_instance_type")).to_have_value("Standard_NV36ads_A10_v5")
    tab_to(page, "id_hours")
    page.keyboard.press("Control+A")
    page.keyboard.type("2")
    tab_to(page, "id_purpose", limit=1)
    page.keyboard.type("Typed without a mouse")
    expect(page.locator("#manifest-preview")).to_contain_text("name: keyboard-phi", timeout=10_000)
    tab_to(page, "submit-request", limit=1)
    shots(page, "keyboard-focus-on-submit")
    assert focused(page)["shadow"] or focused(page)["outline"]
    with page.expect_navigation():
        page.keyboard.press("Space")
    expect(page.locator("#request-status .badge")).to_have_text("Pending approval")
    request = WorkspaceRequest.objects.get()
    assert (request.name, request.preset.name, request.instance_type.name, request.hours, request.purpose) == (
        "keyboard-phi", "microsoft/Phi-3-mini-128k-instruct", "Standard_NV36ads_A10_v5", 2, "Typed without a mouse"
    )  # fmt: skip
    assert page.url.endswith(f"/workspaces/{request.pk}/")
