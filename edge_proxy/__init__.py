"""The edge: Envoy's configuration, rendered from one template for every environment."""
