"""Helper modules of the tests (models, servers, stores, stand-ins, paths); no tests here."""
