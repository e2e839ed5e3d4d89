"""`python -m bot_runtime`: run one bot, configured by the BOTFLEET_* environment variables."""

from bot_runtime.runner import main

raise SystemExit(main())
