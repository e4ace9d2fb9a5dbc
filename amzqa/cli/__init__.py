"""The shells: the command line (generated from the stage configs, in main.py), the recipe loader and the demo."""
