import sys

from encoder_worker.worker import main

sys.exit(main(sys.argv[1:]))
