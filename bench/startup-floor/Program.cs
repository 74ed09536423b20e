// Prints one line and exits: what every .NET process here pays before its own work starts.
System.Console.WriteLine("hello");
