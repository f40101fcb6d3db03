import sys

from mdsrec.cli import main

sys.exit(main())
