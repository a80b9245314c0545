"""dcsd: Domain-Camera-Sample Dynamic networks for multi-domain person re-identification."""
