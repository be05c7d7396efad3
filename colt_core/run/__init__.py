"""The round loop over a run directory: what is trained under which mask, resume, ranks, ticket transfer."""
