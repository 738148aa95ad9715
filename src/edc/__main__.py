from edc.cli.main import app

app(prog_name="edc")
