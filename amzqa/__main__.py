import sys

from amzqa.cli.main import main

sys.exit(main())
