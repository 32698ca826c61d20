"""HTTP layer: dependencies, error mapping, middleware and the routers."""
