import sys

from model.train.pipeline import main

sys.exit(main())
