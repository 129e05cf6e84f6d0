"""Request-time checks of tuning inputs and outputs: dataset URLs and push registries, on CPU."""
