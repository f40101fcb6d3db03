"""Studies: runs trained one after another (benchmark, sweep), their records and the report built from them."""
