"""`python -m modelyard.edge.agent`: the same as the `modelyard-agent` command."""

from __future__ import annotations

from modelyard.edge.agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
