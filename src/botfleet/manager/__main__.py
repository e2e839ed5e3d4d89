from botfleet.manager.server_commands import app

app(prog_name="botfleet")
