#!/bin/bash
# Puts Flower 1.6.0 where the harness runs it, from Flower's public git
# repository (nothing of Flower is kept in this repository):
#
#   setup_flower.sh [GIT_DIR_OR_URL]      (default https://github.com/adap/flower.git)
#
# FLOWER_HOME (default ~/flower-1.6) gets:
#   src/py/flwr                       Flower's Python package at tag v1.6.0
#   v160/flwr -> src/py/flwr          what PYTHONPATH names
#   examples/secaggplus-mt/           the SecAgg+ example at v1.6.0 (its
#                                     workflows.py is what the driver runs)
#   stubs/iterators/                  stand-in for PyPI "iterators" (stubs/ here)
#   stubs/Crypto -> Debian's Cryptodome (pycryptodome, packaged under that name)
#
# Flower 1.6.0 runs on Debian 12's packages (its pins ask for newer
# cryptography and protobuf than Debian has; the parts used here work):
#   apt-get install -y python3-grpcio python3-protobuf python3-numpy \
#       python3-pycryptodome python3-cryptography time
# Run it with /usr/bin/python3 and
#   PYTHONPATH=$FLOWER_HOME/v160:$FLOWER_HOME/stubs FLWR_TELEMETRY_ENABLED=0
set -euo pipefail
SRC=${1:-https://github.com/adap/flower.git}
TAG=v1.6.0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FLOWER_HOME=${FLOWER_HOME:-$HOME/flower-1.6}
mkdir -p "$FLOWER_HOME/v160" "$FLOWER_HOME/stubs"
if [[ -d $SRC ]]; then
    git_dir=$SRC
else
    git_dir=$FLOWER_HOME/flower.git
    [[ -d $git_dir ]] || git clone --bare --filter=blob:none "$SRC" "$git_dir"
fi
git -C "$git_dir" rev-parse --verify -q "$TAG^{commit}" >/dev/null ||
    { echo "setup_flower.sh: $git_dir has no tag $TAG" >&2; exit 1; }
rm -rf "$FLOWER_HOME/src" "$FLOWER_HOME/examples"
git -C "$git_dir" archive "$TAG" src/py/flwr examples/secaggplus-mt | tar -x -C "$FLOWER_HOME"
ln -sfn "$FLOWER_HOME/src/py/flwr" "$FLOWER_HOME/v160/flwr"
rm -rf "$FLOWER_HOME/stubs/iterators"
cp -r "$HERE/stubs/iterators" "$FLOWER_HOME/stubs/iterators"
ln -sfn /usr/lib/python3/dist-packages/Cryptodome "$FLOWER_HOME/stubs/Crypto"
echo "$TAG $(git -C "$git_dir" rev-parse "$TAG^{commit}")" >"$FLOWER_HOME/VERSION"
PYTHONPATH=$FLOWER_HOME/v160:$FLOWER_HOME/stubs FLWR_TELEMETRY_ENABLED=0 /usr/bin/python3 -c '
import flwr, flwr.server.app, flwr.driver
from flwr.client.secure_aggregation import SecAggPlusHandler
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
print("flwr", flwr.__version__ if hasattr(flwr, "__version__") else "?", "imports")'
echo "Flower $(cat "$FLOWER_HOME/VERSION") in $FLOWER_HOME"
