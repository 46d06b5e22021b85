from firstlight.migrations.env import run

run()
