//! Running the watt-agent binary (filled in with the supervisor).
