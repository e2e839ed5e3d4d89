"""`python -m botfleet.runtime`: run one bot, configured by the BOTFLEET_* environment variables."""

from botfleet.runtime.runner import main

raise SystemExit(main())
