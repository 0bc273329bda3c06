"""A Flower app whose clients send tensorwire-encoded updates and whose server averages
them with ``tw.aggregate``."""
