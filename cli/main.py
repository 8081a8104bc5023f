"""`distributeai`: the app, assembled from one module per noun.

| module | commands |
|---|---|
| node.py | `node start|info|peers` |
| job.py | `submit`, `job status|result|list|cancel` |
| network.py | `bootstrap start`, `status`, `credits`, `reputation` |
| tools.py | `bench`, `simulate`, `fuzz`, `sandbox-time`, `devnet` (the tools in distributeai.tools) |
| config.py | `config show` |
| keys.py | `key encrypt|decrypt|show` |

Conventions (cli/README.md, cli/common.py): a user's mistake is one line on stderr and exit code 2;
a node or bootstrap that cannot be reached is one line naming what was tried and exit code 1;
`--json` prints one JSON object. `distributeai --help` lists the single commands in the order they
are registered below, then the groups (node, bootstrap, job, config, key).
"""

from __future__ import annotations

import typer

from distributeai.cli import blob, config, job, keys, network, node, tools
from distributeai.cli.common import run as run_app

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="DistributeAI: a peer-to-peer compute network with k-of-n verified results.")

app.add_typer(node.node_app, name="node")
app.add_typer(network.bootstrap_app, name="bootstrap")
app.add_typer(job.job_app, name="job")
app.add_typer(blob.blob_app, name="blob")
app.command(context_settings=job.SUBMIT_CONTEXT, cls=job.SubmitCommand)(job.submit)
app.command("credits")(network.credits)
app.command("bench")(tools.bench)
app.command("simulate")(tools.simulate)
app.command("fuzz")(tools.fuzz_command)
app.command("sandbox-time")(tools.sandbox_time)
app.command("devnet")(tools.devnet)
app.command("reputation")(network.reputation)
app.command("status")(network.status)
app.add_typer(config.config_app, name="config")
keys.register(app)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
