"""The client line API and its JSON form. Owns client sockets."""
