"""Blueprints, one module each (``bp``); ``create_app`` registers every module found here."""
