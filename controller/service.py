"""The service layer the pages and the JSON API call: one import for all of it."""

from edgebed.controller.accounts import Accounts
from edgebed.controller.agents import Agents
from edgebed.controller.app import Controller, open_controller
from edgebed.controller.inventory import Inventory
from edgebed.controller.metrics import Metrics
from edgebed.controller.reservations import Reservations

__all__ = ["Accounts", "Agents", "Controller", "Inventory", "Metrics", "Reservations", "open_controller"]
