"""Everything after a request exists: requests, approval, cluster apply, status, chat."""
