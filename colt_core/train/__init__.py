"""The Task protocol and the one training recipe every model of every task is trained by."""
