"""Building blocks of the KAITO, kubelet and network stand-ins used by the sandbox and the tests."""
