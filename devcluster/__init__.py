"""Local control plane for tests and the sandbox: real kube-apiserver + etcd with KAITO CRDs."""
