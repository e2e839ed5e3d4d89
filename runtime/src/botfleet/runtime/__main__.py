"""`python -m botfleet.runtime`: run one bot, configured by the BOTFLEET_* environment variables.

`python -m botfleet.runtime kind module:Class` prints the bot's kind document instead.
"""

import sys

if sys.argv[1:2] == ["kind"]:
    from botfleet.runtime.kind import main as kind_main

    raise SystemExit(kind_main(sys.argv[2:]))

from botfleet.runtime.runner import main

raise SystemExit(main())
