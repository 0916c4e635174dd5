"""``python tests/ray_cluster_run.py OUT_JSON -- DAVEL_ARGS...``: a three-node Ray cluster on
this machine (``ray.cluster_utils.Cluster``: a CPU-only head and two nodes declaring one
GPU each), ``davel DAVEL_ARGS... --ray ADDRESS`` run against it with every input's
placement noted (the ``where`` hook), and the first GPU node that finished a video
removed while the batch runs. Writes ``{"returncode", "stderr", "where", "removed",
"nodes"}`` to OUT_JSON. Run by tests/test_ray.py inside a network namespace holding only
loopback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def main() -> None:
    from ray.cluster_utils import Cluster

    out_json = Path(sys.argv[1])
    args = sys.argv[sys.argv.index("--") + 1:]
    where = out_json.with_suffix(".where.jsonl")
    where.unlink(missing_ok=True)
    os.environ["DAVEL_TEST_WHERE"] = str(where)  # the nodes' workers inherit it from here
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                            "include_dashboard": False})
    try:
        gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        nodes = {"head": raylet_pid(cluster.head_node), "gpu": [raylet_pid(n) for n in gpu_nodes]}
        env = dict(os.environ)
        cmd = [sys.executable, str(HERE / "hooked_davel.py"), "where:*", *args, "--ray", cluster.address]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        removed = None
        while p.poll() is None:
            if removed is None and where.exists():
                done = [json.loads(line) for line in where.read_text().splitlines()]
                for node in gpu_nodes:
                    if any(d["raylet"] == raylet_pid(node) for d in done):
                        removed = raylet_pid(node)
                        cluster.remove_node(node, allow_graceful=False)
                        break
            time.sleep(0.1)
        _, err = p.communicate()
        lines = [json.loads(line) for line in where.read_text().splitlines()] if where.exists() else []
        out_json.write_text(json.dumps({"returncode": p.returncode, "stderr": err, "where": lines,
                                        "removed": removed, "nodes": nodes}))
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
