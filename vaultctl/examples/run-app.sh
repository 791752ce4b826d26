#!/bin/sh
# Starts a program with its database password in DB_PASSWORD, read from the vault as a reader
# (an allowlisted address or a reader rule; no token): never written to disk or put on a
# command line. vaultctl becomes the program (exec), so its exit status and signals are its own.
#
#   VAULT_ADDR=10.0.0.1:8200,10.0.0.2:8200 ./run-app.sh /usr/local/bin/app --serve
exec vaultctl run --env DB_PASSWORD=app/db -- "$@"
