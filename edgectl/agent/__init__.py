"""Gateway side: render, apply and read back table inet edgectl; the only code touching the kernel."""
