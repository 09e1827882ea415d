"""Research code: training and evaluation of the models LDCTDenoise ships. Uses the engine; never imported by it."""
