"""`rag mcp`"""

from __future__ import annotations

from typing import Annotated

import typer

from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import WatchServing, settings_for

DEFAULT_PORT = 8765  # rag_cli.mcp_server.DEFAULT_PORT (not imported here: it imports the MCP SDK)


def mcp(
    ctx: typer.Context,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP instead of stdio (needs a bearer token "
                                       "in RAG_MCP_TOKEN).")] = False,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="With --http: the address to listen on.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=1, max=65535,
                                      help="With --http: the port.")] = DEFAULT_PORT,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="With --http: allow a --host that is not "
                                               "a loopback address.")] = False,
    allow_index: Annotated[bool, typer.Option("--allow-index", help="Offer the `index` tool (read-only "
                                              "without it).")] = False,
    watch: WatchServing = False,
) -> None:
    """Serve the index to AI agents over MCP (Claude Desktop, Claude Code, Cursor): stdio by default."""
    env = env_of(ctx)
    settings = settings_for(env, {})
    from rag_cli.mcp_server import serve

    serve(settings, http=http, host=host, port=port, allow_remote=allow_remote, allow_index=allow_index,
          watch=watch, on_event=lambda text: env.event(f"rag mcp: {text}"))


def register(app: typer.Typer) -> None:
    app.command("mcp")(boundary(mcp))
