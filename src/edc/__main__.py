from edc.cli import app

app(prog_name="edc")
