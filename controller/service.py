"""The service layer the pages and the JSON API call: one import for all of it."""

from controller.accounts import Accounts
from controller.agents import Agents
from controller.app import Controller, open_controller
from controller.inventory import Inventory
from controller.metrics import Metrics
from controller.reservations import Reservations

__all__ = ["Accounts", "Agents", "Controller", "Inventory", "Metrics", "Reservations", "open_controller"]
