#!/bin/sh
# Start the URLhaus example connector (OpenCTI connector convention: the image's
# ENTRYPOINT).  The working directory is the image's WORKDIR, which holds the
# connector (example_connector/, run with `python -m`; the library is installed) and
# where a mounted config.yml is read; environment variables override it.  Arguments
# are passed on (for example `--offline /data/out` for one run without a platform).
exec python -m example_connector "$@"
