"""Google Colab, simulated: Colab's package versions in a virtual environment, and a kernel that is Colab's to the
notebooks' set-up cell (``google.colab`` imported before the first cell runs)."""
