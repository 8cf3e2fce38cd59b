-- GET with the bearer token of WRK_TOKEN (bench/observability_cost.py).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_TOKEN")
