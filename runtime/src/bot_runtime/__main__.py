"""`python -m bot_runtime`: the old name of `python -m botfleet.runtime`."""

import runpy

runpy.run_module("botfleet.runtime", run_name="__main__", alter_sys=True)
