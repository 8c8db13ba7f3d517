"""What the tests (and the benchmarks) share: real components and small helpers.

Nothing here is a fixture; the fixtures that start these things live in
`tests/conftest.py`. The modules, by subject:

* `paths`: the checkout's directories (`ROOT`, `DENO_SCRIPTS`, ...).
* `ports`: a free port on 127.0.0.1, waiting for a port or an HTTP server to answer.
* `waiting`: `wait_until`, a bounded poll for a condition.
* `dbfile`: a database file read from outside (`kv_rows`, `point_of`, `backlog`, `query`).
* `writes`: numbered atomic writes for engine-level tests (`put`).
* `processes`: `ServerProcess`, a `denokv serve` child process.
* `deno`: the real Deno CLI (`deno_binary`, `deno_env`, `run_deno`).
* `s3`: the environment and boto3 helpers for a local S3 (`s3_env`, `s3_client`, ...).
* `moto`, `s3rver`, `fault_proxy`: two S3-compatible servers and a fault-injecting proxy.
* `markers`: the pytest plugin that keeps the test markers honest.
* `kvconnect`, `backup_proofs`: raw KV Connect calls; the backup proofs' servers and CLI.
"""
