"""How the portal runs in a cluster: the Helm chart, and the helm binary built from the Go module proxy."""
