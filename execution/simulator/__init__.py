"""A faithful, database-backed stand-in for the MetaTrader5 module (see ``mt5.SimulatedMetaTrader5``)."""
