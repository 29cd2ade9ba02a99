"""The command line: a thin click shell over the library. The only place with click, signals,
asyncio.run and exit codes. Each command group lives in its own module of this package."""

from __future__ import annotations

import click

from foxbatch.cli.actions import cancel_command, retry_command
from foxbatch.cli.common import App, FoxbatchGroup, setup_logging
from foxbatch.cli.db import db_group
from foxbatch.cli.engine import poll_command
from foxbatch.cli.export import export_command
from foxbatch.cli.ingest import ingest_command
from foxbatch.cli.run import run_command, submit_command
from foxbatch.cli.sim import sim_command
from foxbatch.cli.status import jobs_command, status_command
from foxbatch.cli.workers import workers_command
from foxbatch.config import Settings


@click.group(cls=FoxbatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", metavar="URL", help="Task store URL [env FOXBATCH_DB; default "
              "sqlite:///foxbatch.db]; postgresql+psycopg://... for many workers.")
@click.option("--base-url", metavar="URL", help="FoxAPI base URL [env FOXAPI_BASE_URL].")
@click.option("--log-json", is_flag=True, help="Log records as JSON lines.")
@click.option("-v", "--verbose", count=True, help="More detail (tracebacks on errors).")
@click.option("-q", "--quiet", count=True, help="Less output.")
@click.version_option(package_name="foxbatch")
@click.pass_context
def main(ctx: click.Context, db_url: str | None, base_url: str | None, log_json: bool,
         verbose: int, quiet: int) -> None:
    """foxbatch: run large batches of LLM prompts through FoxAPI, crash-safe and resumable.

    The API key comes from FOXAPI_API_KEY only (never a flag, never stored).
    """
    settings = Settings.load(db_url=db_url, base_url=base_url, log_json=log_json,
                             verbosity=verbose - quiet)
    setup_logging(settings)
    app = App(settings)
    ctx.obj = app
    ctx.call_on_close(app.close)


main.add_command(db_group)
main.add_command(sim_command)
main.add_command(poll_command)
main.add_command(workers_command)
main.add_command(ingest_command)
main.add_command(status_command)
main.add_command(submit_command)
main.add_command(run_command)
main.add_command(jobs_command)
main.add_command(export_command)
main.add_command(retry_command)
main.add_command(cancel_command)
