from payguard.cli.main import app

app(prog_name="payguard")
