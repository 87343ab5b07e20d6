from davbackup.cli import run

run()
