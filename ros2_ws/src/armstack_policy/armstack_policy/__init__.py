"""armstack learned-policy runtime: chunk buffering (plain modules) and the policy node."""
