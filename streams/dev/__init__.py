"""Development tools: the local broker, ``retrostitch demo`` (``make run``), a worker in
a subprocess with the local oracle of what it must emit, and a reader of topics. Nothing
in a production process imports this package.
"""
