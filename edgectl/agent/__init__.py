"""Gateway side: render, apply and read back table inet edgectl.

The only code that touches the kernel.
"""
