"""`foxbatch sim`: the FoxAPI simulator as a local server, every knob a flag."""

from __future__ import annotations

from typing import Any

import click

from foxbatch.sim import SimConfig, Simulator
from foxbatch.sim.server import DEFAULT_HOST, base_url, bind, run

DEFAULT_PORT = 8765
RATE = click.FloatRange(0, 1)
SECONDS = click.FloatRange(min=0)
COUNT = click.IntRange(min=0)


@click.command("sim")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on; 0 picks a free one (the printed URL says which).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of every random choice; the same seed and requests give the same run.")
@click.option("--api-key", metavar="KEY",
              help="Accept only `Authorization: Bearer KEY` (default: any Bearer sk-... key).")
@click.option("--models", metavar="M1,M2,...",
              help="Comma-separated models to offer; others answer 422 model_not_supported "
                   "(default: the usual FoxAPI models, and any model is accepted).")
@click.option("--latency-median", type=SECONDS, default=2.0, show_default=True,
              help="Median seconds a task takes (lognormal); 0 finishes tasks at once.")
@click.option("--latency-sigma", type=SECONDS, default=0.5, show_default=True,
              help="Spread of task latency: standard deviation of its logarithm.")
@click.option("--failure-rate", type=RATE, default=0.0, show_default=True,
              help="Share of tasks that end failed with a task_error.")
@click.option("--stuck-rate", type=RATE, default=0.0, show_default=True,
              help="Share of tasks that stay processing for ever.")
@click.option("--p429", type=RATE, default=0.0, show_default=True,
              help="Probability that an API request answers 429 with Retry-After.")
@click.option("--retry-after", type=COUNT, default=1, show_default=True,
              help="Seconds in the Retry-After header of --p429 answers.")
@click.option("--rps", type=click.FloatRange(min=0, min_open=True),
              help="A real limit in API requests per second; beyond it, 429 with Retry-After.")
@click.option("--p5xx-get", type=RATE, default=0.0, show_default=True,
              help="Probability that a GET (poll or model list) answers 500 or 503.")
@click.option("--p5xx-submit-before", type=RATE, default=0.0, show_default=True,
              help="Probability that a submit answers 500/503 without creating a task.")
@click.option("--p5xx-submit-after", type=RATE, default=0.0, show_default=True,
              help="Probability that a submit creates its task, then answers 500/503.")
@click.option("--pdrop-submit", type=RATE, default=0.0, show_default=True,
              help="Probability that a submit creates its task, then breaks the connection "
                   "mid-response.")
@click.option("--empty-result-polls", type=COUNT, default=0, show_default=True,
              help="Polls each completed task first answers with results: null.")
@click.option("--quota", type=COUNT,
              help="Tasks the account can pay for; then submits answer 402 insufficient_quota.")
@click.option("--expire-after", type=SECONDS,
              help="Seconds after which a finished task is forgotten (polls answer 404).")
def sim_command(host: str, port: int, **knobs: Any) -> None:
    """Run the FoxAPI simulator: FoxAPI's endpoints with deterministic answers and faults.

    Point foxbatch at it with --base-url (or FOXAPI_BASE_URL) and any FOXAPI_API_KEY that
    starts with sk-. GET /_sim/stats shows what it saw; POST /_sim/reset forgets everything
    (a JSON body of knobs, e.g. {"p429": 0.1}, changes them).
    """
    config = config_from_options(knobs)
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    click.echo(f"foxbatch sim listening on {base_url(sock)}")
    try:
        run(Simulator(config), sock)
    except KeyboardInterrupt:
        click.echo("foxbatch sim stopped")


def config_from_options(knobs: dict[str, Any]) -> SimConfig:
    """The SimConfig the knob flags describe (`--models` split on commas)."""
    values = dict(knobs)
    models = values.pop("models", None)
    if models is not None:
        values["models"] = tuple(m.strip() for m in models.split(",") if m.strip())
    return SimConfig(**values)
