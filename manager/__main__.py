from manager.cli import app

app(prog_name="botfleet")
