"""The DistributeAI protocol as pure code: messages, canonical encoding, signatures, the k-of-n
tally, the submitter's state machine and certificate checks. No I/O, no clock reads."""
