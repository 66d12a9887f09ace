"""ИЭМК N3.Health (Нетрика): the regional integrated electronic medical record (SPEC I).

`pix` talks to the patient index (PixService): a patient must be registered there, and known by
its IdGlobal, before any case or document about them can be sent to EMKService.
"""
