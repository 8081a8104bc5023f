"""The CLI's configuration: one frozen `Config`, merged once per command from four layers.

    defaults  <  TOML file  <  DISTRIBUTEAI_<KEY> environment variables  <  command-line flags

The file is `$DISTRIBUTEAI_CONFIG` when that is set (it must then exist), else
`$XDG_CONFIG_HOME/distributeai/config.toml` (`~/.config/distributeai/config.toml`), which may be
absent. Its keys are the names in `DEFAULTS`, at the top level:

    data_dir = "~/distributeai/node"      # relative paths are relative to the file
    bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."]
    sandbox = "docker"
    bootstrap_http = "http://127.0.0.1:8080"

An environment variable gives one value as text: `DISTRIBUTEAI_BOOTSTRAP` is a comma-separated list,
`DISTRIBUTEAI_GPU` is 1/0, true/false or yes/no. A flag overrides everything. A bad value anywhere
is a `ConfigError` naming where it came from; the CLI prints it as one line and exits 2.

Only what a node and the commands that talk to it need lives here; `bootstrap start` and `devnet`
take flags only (their data directories are not the node's).

Also here: the `--data-dir` and `--json` options every command shares, and `config show`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional

import typer

from distributeai.p2p.ratelimit import GOSSIP_AUTHOR_RATE, NEWCOMER_GOSSIP_RATE, REQUEST_RATE

ENV_PREFIX = "DISTRIBUTEAI_"
CONFIG_ENV = "DISTRIBUTEAI_CONFIG"
SANDBOXES = ("auto", "docker", "bwrap", "process")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")  # cli/logs.py
HTTP_AUTHS = ("auto", "token")
POW_MAX_BITS = 64  # consensus/pow.py MAX_DIFFICULTY: no key would ever be admitted beyond it

DataDirOption = typer.Option(None, "--data-dir", help="The node's data directory (key, store, control socket). "
                                                      "Default data_dir from the config file or DISTRIBUTEAI_DATA_DIR.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object.")


class ConfigError(ValueError):
    """A value that cannot be used, with where it came from."""


@dataclass(frozen=True)
class Config:
    # None: no default place; a command that needs a node asks for --data-dir then.
    data_dir: Path | None = None
    # No bootstrap: the node listens and waits to be dialed, or rejoins the peers it stored.
    bootstrap: tuple[str, ...] = ()
    # Loopback and an ephemeral port: nothing is exposed unless the volunteer says so.
    listen: str = "/ip4/127.0.0.1/tcp/0"
    # Docker when its daemon answers, else bubblewrap; `process` isolates nothing, so never by default.
    sandbox: str = "auto"
    # None: Docker's own DOCKER_HOST, else its default socket.
    docker_host: str | None = None
    # None: no /metrics endpoint, so no port is opened unasked.
    metrics: str | None = None
    # HOST:PORT of the node's REST API (node/api.py); None: not served. Off loopback it asks for
    # the bearer token, as /metrics does.
    api: str | None = None
    # "auto": the node's HTTP endpoints ask for a bearer token only off loopback (nothing there is
    # reachable from another host without one); "token": always (p2p/httpauth.py).
    http_auth: str = "auto"
    # None: DATA_DIR/http.token, created (mode 0600) the first time a token is needed.
    http_token_file: Path | None = None
    # What a volunteer lends by default: both cores of a small machine (node/bidding.py Capacity).
    cpu: float = 2.0
    # A quarter of a modest machine's memory (node/bidding.py Capacity).
    memory_mb: int = 2048
    # Concurrent jobs; sandbox starts dominate beyond this on 2 cores (node/bidding.py Capacity).
    max_jobs: int = 4
    # Every identity's starting balance in this node's view (consensus/ledger.py GENESIS_CREDITS).
    genesis_credits: int = 100
    # The node advertises no GPU unless told; a job needing one would fail on it.
    gpu: bool = False
    # Proof-of-work bits demanded of every identity and solved for this node's own: about 0.5 s of
    # one core per identity (consensus/pow.py DEFAULT_DIFFICULTY).
    pow_difficulty: int = 20
    # Sampled bidding: about this many times a job's replicas of the estimated network may bid on it
    # (consensus/sampling.py DEFAULT_FACTOR); 0: every node bids on every job.
    bid_sample_factor: int = 4
    # Enough to see peers and jobs come and go without libp2p's chatter.
    log_level: str = "info"
    # Text for people; "json" (one object a line: time, level, logger, message, fields) for log shippers.
    log_format: str = "text"
    # Requests a second one peer may send on one protocol; about 3 times an honest peer's peak
    # (p2p/ratelimit.py REQUEST_RATE). 0: no limit.
    request_rate_limit: float = REQUEST_RATE
    # Gossip messages a second by one author; a forwarding peer may relay 4 times that
    # (p2p/ratelimit.py GOSSIP_AUTHOR_RATE). 0: no limit.
    gossip_rate_limit: float = GOSSIP_AUTHOR_RATE
    # The same for an author this node knows no verified job or reputation of: a fresh key's
    # flood costs every node work (p2p/ratelimit.py NEWCOMER_GOSSIP_RATE). 0: no limit.
    newcomer_gossip_rate_limit: float = NEWCOMER_GOSSIP_RATE
    # None: `status` shows no network totals until a bootstrap's stats URL is given.
    bootstrap_http: str | None = None
    # Bytes kept free on the data dir's filesystem: below it the node bids on nothing (node/disk.py).
    # 1 GiB: room for the rest of the machine, the store and a job's outputs.
    disk_reserve: int = 1 << 30
    # The largest output quota (a job's out_max_bytes) the node bids on: the spec's default, 1 GiB.
    max_output: int = 1 << 30
    # The block store's size (DATA_DIR/blocks: inputs, outputs and blobs by CID); beyond it the
    # least recently used unpinned blocks are evicted (node/blockstore.py).
    store_max: int = 10 << 30
    # Seconds a job's outputs are kept after it ended, for nodes fetching them (node/retention.py).
    keep_outputs: float = 24 * 3600.0
    # Seconds between reconciliations of the certificate set with a random peer (node/reconcile.py);
    # 0: only when a peer connects.
    reconcile_interval: float = 60.0
    # Where each value came from: "default", "file PATH", "env NAME" or "flag --NAME".
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # The file consulted (whether or not it exists).
    path: Path | None = field(default=None, compare=False, repr=False)
    path_exists: bool = field(default=False, compare=False, repr=False)

    def require_data_dir(self) -> Path:
        if self.data_dir is None:
            raise ConfigError(f"--data-dir is required (or set data_dir in {self.path} or {ENV_PREFIX}DATA_DIR)")
        return self.data_dir

    def values(self) -> dict[str, Any]:
        """The settings as plain JSON values, in declaration order."""
        out: dict[str, Any] = {}
        for name in KEYS:
            v = getattr(self, name)
            out[name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
        return out


KEYS = tuple(f.name for f in fields(Config) if f.name not in ("sources", "path", "path_exists"))
DEFAULTS = Config()


def config_path(env: Mapping[str, str]) -> tuple[Path, bool]:
    """The file to read and whether it was named explicitly (then it must exist)."""
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser(), True
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path(env.get("HOME", "~")).expanduser() / ".config"
    return base / "distributeai" / "config.toml", False


def _parse(name: str, value: Any, where: str, *, text: bool, base: Path | None = None) -> Any:
    """`value` for key `name` as Config holds it. `text`: it came as a string (environment)."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: {name} must be {what}, got {value!r}")

    if name in ("data_dir", "http_token_file"):
        if not isinstance(value, str) or not value:
            raise bad("a path")
        p = Path(value).expanduser()
        return (base / p) if base is not None and not p.is_absolute() else p
    if name == "bootstrap":
        if text:
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of multiaddrs")
        return tuple(value)
    if name in ("listen", "docker_host"):
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    if name == "sandbox":
        if value not in SANDBOXES:
            raise bad("one of " + ", ".join(SANDBOXES))
        return value
    if name == "http_auth":
        if value not in HTTP_AUTHS:
            raise bad("one of " + ", ".join(HTTP_AUTHS))
        return value
    if name == "log_level":
        if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
            raise bad("one of " + ", ".join(LOG_LEVELS))
        return value.lower()
    if name == "log_format":
        if not isinstance(value, str) or value.lower() not in LOG_FORMATS:
            raise bad("one of " + ", ".join(LOG_FORMATS))
        return value.lower()
    if name in ("metrics", "api"):
        host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise bad("HOST:PORT")
        return value
    if name == "bootstrap_http":
        if not isinstance(value, str) or not value:
            raise bad("a URL such as http://127.0.0.1:8080")
        url = value if "://" in value else "http://" + value
        return url.rstrip("/").removesuffix("/api/stats")
    if name == "cpu":
        try:
            number = float(value) if text or isinstance(value, (int, float)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not number > 0:
            raise bad("a positive number of cores")
        return number
    if name in ("request_rate_limit", "gossip_rate_limit", "newcomer_gossip_rate_limit"):
        try:
            number = float(value) if text or isinstance(value, (int, float)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not number >= 0 or number == float("inf"):
            raise bad("a number of messages a second (0: no limit)")
        return number
    if name in ("memory_mb", "max_jobs", "genesis_credits", "pow_difficulty", "bid_sample_factor"):
        least = 0 if name in ("genesis_credits", "pow_difficulty", "bid_sample_factor") else 1
        try:
            number = int(value) if text else value if isinstance(value, int) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or number < least:
            raise bad(f"an integer of at least {least}")
        if name == "pow_difficulty" and number > POW_MAX_BITS:
            raise bad(f"an integer from 0 to {POW_MAX_BITS}")
        if name == "bid_sample_factor" and number > BID_SAMPLE_FACTOR_MAX:
            raise bad(f"an integer from 0 to {BID_SAMPLE_FACTOR_MAX}")
        return number
    if name in ("disk_reserve", "max_output", "store_max"):
        number = parse_size(value)
        if number is None:
            raise bad("a size in bytes, or with a unit (512m, 1g)")
        return number
    if name in ("keep_outputs", "reconcile_interval"):
        seconds = parse_duration(value)
        if seconds is None:
            raise bad("a duration in seconds, or with a unit (90s, 30m, 24h, 7d)")
        return seconds
    if name == "gpu":
        if text:
            low = str(value).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
        elif isinstance(value, bool):
            return value
        raise bad("true or false")
    raise ConfigError(f"{where}: unknown key {name!r}")  # pragma: no cover - KEYS guards this


BID_SAMPLE_FACTOR_MAX = 1000  # beyond any network's size in replicas: every node bids anyway


SIZE_UNITS = {"": 0, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40}
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value: Any) -> int | None:
    """Bytes from an integer or a string such as "512m", "1g", "1GiB", "4096"; None if unreadable."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d{1,15})\s*(?:([kKmMgGtT])(?:i?[bB])?|([bB]))?\s*", value)
    if not m:
        return None
    return int(m.group(1)) << SIZE_UNITS[(m.group(2) or m.group(3) or "").lower()]


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string such as "90s", "30m", "24h", "7d"; None if unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if 0 <= value < float("inf") else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d{1,9}(?:\.\d+)?)\s*([smhdSMHD]?)\s*", value)
    return float(m.group(1)) * DURATION_UNITS[m.group(2).lower()] if m else None


def load_config(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Merge defaults < file < environment < flags into one Config. Flags whose value is None (or
    an empty list for `bootstrap`) were not given and do not count."""
    env = os.environ if env is None else env
    path, explicit = config_path(env)
    values: dict[str, Any] = {k: getattr(DEFAULTS, k) for k in KEYS}
    sources = {k: "default" for k in KEYS}

    exists = path.is_file()
    if explicit and not exists:
        raise ConfigError(f"{CONFIG_ENV} names {path}, which is not a file")
    if exists:
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: cannot read it: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in doc.items():
            if key not in KEYS:
                raise ConfigError(f"config file {path}: unknown key {key!r} (known: {', '.join(KEYS)})")
            values[key] = _parse(key, value, f"config file {path}", text=False, base=path.parent)
            sources[key] = f"file {path}"

    for key in KEYS:
        name = ENV_PREFIX + key.upper()
        if name in env:
            values[key] = _parse(key, env[name], name, text=True)
            sources[key] = f"env {name}"

    for key, value in (flags or {}).items():
        if key not in KEYS:
            raise ValueError(f"no config key {key!r}")  # a programming error, not a user's
        if value is None or (key == "bootstrap" and not value):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, Path):
            value = str(value)
        if key == "bootstrap":
            value = list(value)
        values[key] = _parse(key, value, flag, text=False)
        sources[key] = f"flag {flag}"

    return Config(**values, sources=MappingProxyType(sources), path=path, path_exists=exists)


# --- `config show` ------------------------------------------------------------------------------

config_app = typer.Typer(no_args_is_help=True, help="Show the merged configuration (file < environment < flags).")


@config_app.command("show")
def config_show(
    data_dir: Optional[Path] = DataDirOption,
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Bootstrap multiaddr; repeatable."),
    listen: Optional[str] = typer.Option(None, help="libp2p listen multiaddr."),
    sandbox: Optional[str] = typer.Option(None, help="auto, docker, bwrap or process."),
    docker_host: Optional[str] = typer.Option(None, help="Docker daemon address."),
    metrics: Optional[str] = typer.Option(None, help="HOST:PORT of /metrics."),
    cpu: Optional[float] = typer.Option(None, help="Cores offered to jobs."),
    memory_mb: Optional[int] = typer.Option(None, help="MiB offered to jobs."),
    max_jobs: Optional[int] = typer.Option(None, help="Jobs run at once."),
    genesis_credits: Optional[int] = typer.Option(None, help="Every identity's starting credits."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--no-gpu", help="This node offers a GPU."),
    pow_difficulty: Optional[int] = typer.Option(None, help="Proof-of-work bits demanded and solved."),
    log_level: Optional[str] = typer.Option(None, help="debug, info, warning or error."),
    log_format: Optional[str] = typer.Option(None, help="text or json."),
    bootstrap_http: Optional[str] = typer.Option(None, help="The bootstrap's stats URL (for `status`)."),
    as_json: bool = JsonOption,
) -> None:
    """Show the configuration as the commands see it, each value with where it came from:
    default < config file ($DISTRIBUTEAI_CONFIG, else ~/.config/distributeai/config.toml) <
    DISTRIBUTEAI_<KEY> environment variables < the flags given here.

    Example: DISTRIBUTEAI_SANDBOX=docker distributeai config show --cpu 4 --json
    """
    from .common import print_json, settings

    cfg = settings(data_dir=data_dir, bootstrap=bootstrap, listen=listen, sandbox=sandbox, docker_host=docker_host,
                   metrics=metrics, cpu=cpu, memory_mb=memory_mb, max_jobs=max_jobs,
                   genesis_credits=genesis_credits, gpu=gpu, pow_difficulty=pow_difficulty, log_level=log_level,
                   log_format=log_format, bootstrap_http=bootstrap_http)
    if as_json:
        print_json({"config_file": str(cfg.path), "config_file_exists": cfg.path_exists,
                    "settings": cfg.values(), "sources": dict(cfg.sources)})
        return
    typer.echo(f"# config file: {cfg.path}{'' if cfg.path_exists else ' (not found)'}")
    rows = [(key, "(none)" if value is None or value == [] else ", ".join(value) if isinstance(value, list)
             else str(value).lower() if isinstance(value, bool) else str(value), cfg.sources[key])
            for key, value in cfg.values().items()]
    key_width = max(len(key) for key, _, _ in rows)
    value_width = max(len(shown) for _, shown, _ in rows)
    for key, shown, source in rows:
        typer.echo(f"{key:{key_width}}  {shown:{value_width}}  # {source}")
