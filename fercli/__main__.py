from fercli.cli import main

main(prog_name="fercli")
